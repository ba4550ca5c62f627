//! The accelerator probe on this host, for real (VM tier: it boots OVMF
//! under KVM for up to 10 s; `./scripts/test.sh` runs it with --ignored).

use std::time::{Duration, Instant};

use trustlaunch_runtime::accel::{probe, Accel, ProbeConfig};

#[test]
#[ignore = "VM tier (boots OVMF under KVM, up to 10 s): ./scripts/test.sh runs it with --ignored"]
fn probe_decides_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let d = probe(&ProbeConfig::default(), dir.path()).expect("probe runs");
    eprintln!("accelerator: {:?} ({})", d.accel, d.reason);
    assert!(t0.elapsed() < Duration::from_secs(20));
    match d.accel {
        Accel::Kvm => assert!(d.reason.starts_with("KVM booted OVMF"), "{}", d.reason),
        Accel::Tcg => assert!(!d.reason.is_empty()),
    }
    // The probe cleans its scratch files and its QEMU.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "probe-VARS.fd"])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "probe QEMU still running");
}
