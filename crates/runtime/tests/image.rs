//! Disk images read back with the tools' own readers: the GPT by `sfdisk
//! --json`, the ESP's files by `mcopy` from the disk at the partition's
//! offset. (Booting such a disk under OVMF is the CLI's VM-tier test.)

use std::process::Command;

use trustlaunch_runtime::image::{build_disk, ImageError, DISK_BYTES};

#[test]
fn disk_has_a_gpt_esp_holding_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.efi");
    let b = dir.path().join("b.bin");
    std::fs::write(&a, vec![0x4d; 300_000]).unwrap();
    std::fs::write(&b, b"second file").unwrap();
    let disk = dir.path().join("disk.img");
    build_disk(
        &[("EFI/BOOT/BOOTX64.EFI", &a), ("EFI/debian/extra.bin", &b)],
        &dir.path().join("scratch"),
        &disk,
    )
    .unwrap();
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), DISK_BYTES);

    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(&disk)
        .output()
        .expect("sfdisk (fdisk)");
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");

    for (esp_path, want) in [
        ("EFI/BOOT/BOOTX64.EFI", std::fs::read(&a).unwrap()),
        ("EFI/debian/extra.bin", b"second file".to_vec()),
    ] {
        let got = dir.path().join("got");
        let _ = std::fs::remove_file(&got);
        let st = Command::new("mcopy")
            .arg("-i")
            .arg(format!("{}@@1M", disk.display()))
            .arg(format!("::/{esp_path}"))
            .arg(&got)
            .status()
            .expect("mcopy (mtools)");
        assert!(st.success(), "{esp_path} not on the ESP");
        assert_eq!(std::fs::read(&got).unwrap(), want, "{esp_path}");
    }
    // The scratch ESP image is gone.
    assert!(!dir.path().join("scratch/esp.img").exists());
}

#[test]
fn bad_paths_and_oversize_are_refused_before_any_tool_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    std::fs::write(&a, b"x").unwrap();
    for bad in ["", "EFI//x", "EFI\\\\BOOT", "EFI/BOOT/é", "EFI/a b"] {
        match build_disk(&[(bad, &a)], dir.path(), &dir.path().join("d")) {
            Err(ImageError::BadEspPath(p)) => assert_eq!(p, bad),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let big = dir.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(DISK_BYTES)
        .unwrap();
    assert!(matches!(
        build_disk(
            &[("EFI/BOOT/BOOTX64.EFI", &big)],
            dir.path(),
            &dir.path().join("d")
        ),
        Err(ImageError::TooLarge { .. })
    ));
}
