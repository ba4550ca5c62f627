//! The `-kernel` bypass, on a real VM (VM tier): QEMU's `-kernel` hands the
//! kernel to OVMF's legacy loader, which boots it under Secure Boot even
//! though no db entry allows it (see `../shared/design/vm-runtime-notes.md`).
//! The runtime never boots that way; this test does it by hand to a VM the
//! runtime created — same firmware, store, vTPM and attestation channel —
//! and checks that appraisal catches it: no boot application was measured
//! and authorised, and the boot does not match the image's baseline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand_core::OsRng;
use trustlaunch_attestation::Outcome;
use trustlaunch_runtime::accel::{Accel, AccelDecision};
use trustlaunch_runtime::channel::Channel;
use trustlaunch_runtime::image_build::{build_image, BuildRequest, Recipe};
use trustlaunch_runtime::initramfs::{build_initramfs, newest_kernel, InitramfsSpec};
use trustlaunch_runtime::platform::{Home, SealedFile};
use trustlaunch_runtime::process::Marker;
use trustlaunch_runtime::qemu::{Firmware, QemuConfig};
use trustlaunch_runtime::spec::{Generation, KeyTemplate, Network, SecurityProfile, VmSpec};
use trustlaunch_runtime::vm::{qemu_command, Runtime};
use trustlaunch_runtime::vtpm::VtpmPaths;

/// The guest agent, built next to this test's binary.
fn agent() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let agent = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("trustlaunch-agent");
    if !agent.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "trustlaunch-agent"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    agent
}

/// Kills what it started when the test ends.
struct Kill(Vec<i32>);

impl Drop for Kill {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

#[test]
#[ignore = "VM tier: one QEMU boot under TCG (~15 s); ./scripts/test.sh runs it"]
fn a_kernel_passed_by_dash_kernel_is_caught_by_appraisal() {
    let tmp = tempfile::Builder::new()
        .prefix("tl-bypass-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let accel = match std::env::var("TRUSTLAUNCH_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let rt = Runtime::open_with_accel(
        Home::open(dir.join("home")).unwrap(),
        AccelDecision {
            accel,
            reason: "test".into(),
        },
    )
    .unwrap();
    let agent = agent();
    let img = dir.join("tiny");
    build_image(
        &BuildRequest {
            name: "tiny".into(),
            recipe: Recipe::tiny(agent.clone(), None).unwrap(),
            db_key: Some(&rt.keys().db),
            out_dir: img.clone(),
            created_at: 1_700_000_000,
        },
        &mut |_| {},
    )
    .unwrap();
    let name = "bypass";
    rt.create(
        &VmSpec {
            name: name.into(),
            hyper_v_generation: Generation::V2,
            security_profile: SecurityProfile::trusted_launch(),
            key_template: KeyTemplate::Custom,
            vcpus: 1,
            memory_mib: 1024,
            image: img,
            data_disks: Vec::new(),
            network: Network::None,
            os_profile: None,
        },
        &mut |_| {},
    )
    .unwrap();

    // The VM's own firmware, store, disk and vTPM, by the runtime's layout,
    // plus `-kernel` with Debian's kernel (signed by Debian, a key this
    // VM's db does not hold) and the tiny image's initramfs.
    let vm = rt.home().vms().join(name);
    let run = vm.join("run");
    let (release, kernel) = newest_kernel(Path::new("/boot")).unwrap();
    let initrd = dir.join("initrd.cpio");
    std::fs::write(
        &initrd,
        build_initramfs(&InitramfsSpec::new(agent, release)).unwrap(),
    )
    .unwrap();
    let vtpm = VtpmPaths {
        state: vm.join("vtpm"),
        key: SealedFile::new(
            rt.home().keys().join(format!("{name}.vtpm.key")),
            format!("vtpm/{name}"),
        ),
    };
    // As the runtime starts them, but as this test's user (root): the
    // bypass is about the firmware, not about confinement.
    let marker = Marker {
        dir: vm.display().to_string(),
        uid: None,
    };
    let (qemu_end, swtpm_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let swtpm = vtpm
        .spawn_for_vm(
            &rt.home().master_key().unwrap(),
            swtpm_end.into(),
            &dir.join("swtpm.log"),
            &marker,
            None,
        )
        .unwrap();
    let mut guard = Kill(vec![i32::try_from(swtpm.id()).unwrap()]);
    trustlaunch_runtime::process::reap_in_background(swtpm);
    let cfg = QemuConfig {
        name: name.into(),
        accel,
        firmware: Firmware::UefiSecureBoot {
            code: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd".into(),
            vars: vm.join("OVMF_VARS.fd"),
        },
        vcpus: 1,
        memory_mib: 1024,
        os_disk: vm.join("os.qcow2"),
        os_base: std::fs::canonicalize(dir.join("tiny/disk.raw")).unwrap(),
        data_disks: Vec::new(),
        vtpm: true,
        console_log: vm.join("console.log"),
        qmp_socket: run.join("qmp.sock"),
        attestation_socket: Some(run.join("attest.sock")),
        nic: None,
        first_boot: None,
    };
    let mut cmd = qemu_command(
        Path::new("qemu-system-x86_64"),
        &cfg.launch(),
        Some(qemu_end.into()),
    )
    .unwrap();
    let qemu = cmd
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 loglevel=4 panic=-1"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    drop(cmd);
    guard.0.push(i32::try_from(qemu.id()).unwrap());
    std::fs::write(run.join("qemu.pid"), qemu.id().to_string()).unwrap();
    trustlaunch_runtime::process::reap_in_background(qemu);

    // The agent answers as on any boot; the runtime's own checks pass (the
    // quote is genuine, the AK is in this VM's vTPM) ...
    // From the VM's record, not `show`: this hand-started QEMU carries no
    // marker of the VM, so the runtime's refresh would (rightly) not take
    // it for the VM's and would clear its sockets.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vm.join("state.json")).unwrap()).unwrap();
    let ek = trustlaunch_eventlog::hex::decode(state["ekPublic"].as_str().unwrap()).unwrap();
    let received = Channel::connect(&run.join("attest.sock"))
        .unwrap()
        .attest(&ek, Duration::from_secs(180), &mut OsRng, 0)
        .unwrap();
    assert_eq!(
        received.evidence.secure_boot,
        Some(1),
        "the guest believes it is secure"
    );
    std::fs::write(
        vm.join("attestation.json"),
        serde_json::to_vec(&received).unwrap(),
    )
    .unwrap();

    // ... but the appraisal sees the bypass: no boot application went
    // through the firmware's verified load, and the boot is not the image's.
    let a = rt.appraise(name).unwrap().unwrap();
    let failed: Vec<&str> = a.failures().map(|c| c.name).collect();
    assert_eq!(
        failed,
        ["boot.authorities", "baseline"],
        "{}",
        serde_json::to_string_pretty(&a.checks).unwrap()
    );
    assert!(a
        .check("boot.authorities")
        .unwrap()
        .detail
        .contains("-kernel"));
    for ok in [
        "quote.signature",
        "log.replay",
        "secureboot.enabled",
        "secureboot.db",
    ] {
        assert_eq!(a.check(ok).unwrap().outcome, Outcome::Pass, "{ok}");
    }
    drop(guard);
    rt.delete(name).unwrap();
}
