//! Gen2 images read back with the tools' own readers: the cpio writer by
//! `cpio`, the initramfs by our parser, the ESP by `mcopy` at the
//! partition's offset, the UKI's signature by the Secure Boot toolkit.
//! (Booting the images is the CLI's VM-tier test, `image_cli.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use trustlaunch_runtime::image::ImageError;
use trustlaunch_runtime::image_build::{
    boot_component, build_image, debian_grub_cfg, BuildRequest, Recipe, DISK_FILE, ESP_OFFSET,
};
use trustlaunch_runtime::image_meta::{
    trusted_launch_feature, BootComponent, DiskInfo, EspFile, Generation, ImageMetadata,
    KeyTemplate, MetadataError, Sha256Digest, METADATA_FILE, SCHEMA,
};
use trustlaunch_runtime::initramfs::{
    build_initramfs, newest_kernel, parse_newc, CpioWriter, InitramfsSpec,
};
use trustlaunch_secureboot::keys::{CertRequest, CertRole, KeyPair, SigningKey};
use trustlaunch_secureboot::verify::{verify_image, Database, Verdict};

fn release() -> String {
    newest_kernel(Path::new("/boot"))
        .expect("a kernel in /boot: apt-get install -y linux-image-amd64")
        .0
}

fn esp_file(disk: &Path, esp_path: &str) -> Vec<u8> {
    let got = disk.with_extension(format!("{}.out", esp_path.replace('/', "_")));
    let st = Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{ESP_OFFSET}", disk.display()))
        .arg(format!("::/{esp_path}"))
        .arg(&got)
        .status()
        .expect("mcopy (mtools)");
    assert!(st.success(), "{esp_path} not on the ESP");
    std::fs::read(&got).unwrap()
}

#[test]
fn cpio_writer_round_trips_through_gnu_cpio() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = CpioWriter::new();
    w.dir("etc", 0o755).unwrap();
    w.file("bin/tool", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
    w.file("etc/odd-size", 0o600, &[7u8; 5]).unwrap();
    w.symlink("bin/sh", "tool").unwrap();
    assert!(w.file("bin/tool", 0o644, b"again").is_err());
    let archive = w.finish();
    assert_eq!(archive.len() % 4, 0);

    let entries = parse_newc(&archive).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["etc", "bin", "bin/tool", "etc/odd-size", "bin/sh"]);
    assert!(entries[2].is_file() && entries[2].mode & 0o777 == 0o755);
    assert!(entries[4].is_symlink() && entries[4].data == b"tool");
    assert!(entries[0].is_dir());

    let path = dir.path().join("a.cpio");
    std::fs::write(&path, &archive).unwrap();
    let out = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(&path)
        .output()
        .expect("cpio");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        names
    );
    let root = dir.path().join("x");
    std::fs::create_dir(&root).unwrap();
    let st = Command::new("cpio")
        .args(["-i", "-d", "--quiet", "-F"])
        .arg(&path)
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read(root.join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(std::fs::read(root.join("etc/odd-size")).unwrap(), [7u8; 5]);
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        PathBuf::from("tool")
    );
}

#[test]
fn initramfs_holds_init_busybox_agent_libraries_and_modules() {
    // This test binary is a dynamically linked Rust binary: a fair agent
    // stand-in (libc, libgcc_s, the loader).
    let agent = std::env::current_exe().unwrap();
    let release = release();
    let archive = build_initramfs(&InitramfsSpec::new(agent, release.clone())).unwrap();
    let entries = parse_newc(&archive).unwrap();
    let find = |name: &str| entries.iter().find(|e| e.name == name);
    let init = find("init").expect("/init");
    assert!(init.is_file() && init.mode & 0o111 != 0);
    let init = String::from_utf8(init.data.clone()).unwrap();
    assert!(init.contains("trustlaunch-init: up (kernel"));
    assert!(init.contains("mount -t efivarfs"));
    assert!(init.contains("acpid"));
    assert_eq!(
        find("bin/busybox").unwrap().data,
        std::fs::read("/bin/busybox").unwrap()
    );
    assert!(find("bin/trustlaunch-agent")
        .unwrap()
        .data
        .starts_with(b"\x7fELF"));
    for lib in [
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
    ] {
        assert!(find(lib).is_some_and(|e| e.is_file()), "{lib} missing");
    }
    let power = find("etc/acpi/PWRF/00000080").expect("acpid power-button handler");
    assert!(String::from_utf8_lossy(&power.data).contains("poweroff -f"));
    // Each module and its dependencies, loaded dependencies first.
    let insmods: Vec<&str> = init
        .lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let pos = |m: &str| {
        insmods
            .iter()
            .position(|p| p.ends_with(&format!("/{m}.ko")))
            .unwrap_or_else(|| panic!("{m} not loaded: {insmods:?}"))
    };
    for m in [
        "virtio",
        "virtio_ring",
        "virtio_pci",
        "virtio_console",
        "efivarfs",
        "button",
        "evdev",
        "qemu_fw_cfg",
    ] {
        let p = insmods[pos(m)].trim_start_matches('/');
        assert!(find(p).is_some(), "{p} not in the archive");
    }
    for (dep, module) in [
        ("virtio", "virtio_pci"),
        ("virtio_ring", "virtio_pci"),
        ("virtio", "virtio_console"),
        ("virtio_ring", "virtio_console"),
    ] {
        assert!(pos(dep) < pos(module), "{dep} after {module}: {insmods:?}");
    }
    assert!(find(&format!("lib/modules/{release}/modules.dep")).is_some());
}

#[test]
fn initramfs_errors_name_what_is_missing() {
    let mut spec = InitramfsSpec::new("/usr/bin/true".into(), release());
    spec.modules.push("no_such_module".into());
    assert!(matches!(
        build_initramfs(&spec),
        Err(ImageError::Module { module, .. }) if module == "no_such_module"
    ));
    let spec = InitramfsSpec::new("/usr/bin/true".into(), "0.0-none".into());
    assert!(matches!(build_initramfs(&spec), Err(ImageError::Io { .. })));
    let spec = InitramfsSpec::new("/nonexistent/agent".into(), release());
    assert!(build_initramfs(&spec).is_err());
}

fn sample_metadata() -> ImageMetadata {
    ImageMetadata {
        schema: SCHEMA,
        name: "sample".into(),
        kind: "tiny".into(),
        generation: Generation::V2,
        features: vec![trusted_launch_feature()],
        key_template: KeyTemplate::Microsoft,
        db_certificate: None,
        boot_components: vec![BootComponent {
            esp_path: "EFI/BOOT/BOOTX64.EFI".into(),
            authenticode_sha256: Sha256Digest::of(b"pe"),
            signers: vec!["CN=someone".into()],
            uki_sections: vec![],
            uki_pcr11_sha256: None,
        }],
        esp_files: vec![EspFile {
            esp_path: "EFI/BOOT/BOOTX64.EFI".into(),
            size_bytes: 2,
            sha256: Sha256Digest::of(b"pe"),
        }],
        kernel_release: Some("6.1.0-56-amd64".into()),
        kernel_cmdline: None,
        created_at: "2026-11-23T00:00:00Z".into(),
        disk: DiskInfo {
            file: "disk.raw".into(),
            format: "raw".into(),
            size_bytes: 1,
            sha256: Sha256Digest::of(b"d"),
        },
        notes: vec![],
        guest_agent: Some(true),
        trusted_launch_refusals: vec![],
        predicted_boot: None,
    }
}

#[test]
fn metadata_round_trips_and_malformed_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let meta = sample_metadata();
    meta.write(dir.path()).unwrap();
    assert_eq!(ImageMetadata::read(dir.path()).unwrap(), meta);
    let json: serde_json::Value = serde_json::from_str(&meta.to_json()).unwrap();
    assert_eq!(json["generation"], "V2");
    assert_eq!(
        json["features"],
        serde_json::json!([{"name": "SecurityType", "value": "TrustedLaunchSupported"}])
    );
    assert_eq!(json["key_template"], "microsoft");

    let bad = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = json.clone();
        edit(&mut v);
        std::fs::write(dir.path().join(METADATA_FILE), v.to_string()).unwrap();
        ImageMetadata::read(dir.path()).unwrap_err()
    };
    for (what, err) in [
        (
            "short digest",
            bad(&|v| v["disk"]["sha256"] = "abcd".into()),
        ),
        ("unknown field", bad(&|v| v["extra"] = 1.into())),
        (
            "Trusted Launch without a boot component",
            bad(&|v| v["boot_components"] = serde_json::json!([])),
        ),
        (
            "escaping disk",
            bad(&|v| v["disk"]["file"] = "../disk.raw".into()),
        ),
        (
            "Trusted Launch on a V1 image",
            bad(&|v| v["generation"] = "V1".into()),
        ),
        ("generation", bad(&|v| v["generation"] = "V3".into())),
        ("key template", bad(&|v| v["key_template"] = "none".into())),
        (
            "esp path",
            bad(&|v| v["esp_files"][0]["esp_path"] = "EFI/../x".into()),
        ),
        ("schema", bad(&|v| v["schema"] = 9.into())),
        (
            "component not on ESP",
            bad(&|v| v["esp_files"] = serde_json::json!([])),
        ),
    ] {
        assert!(
            matches!(
                err,
                MetadataError::Json { .. } | MetadataError::Invalid { .. }
            ),
            "{what}: {err}"
        );
    }
    std::fs::write(dir.path().join(METADATA_FILE), b"{not json").unwrap();
    assert!(matches!(
        ImageMetadata::read(dir.path()),
        Err(MetadataError::Json { .. })
    ));
    std::fs::write(dir.path().join(METADATA_FILE), vec![b' '; (1 << 20) + 1]).unwrap();
    assert!(matches!(
        ImageMetadata::read(dir.path()),
        Err(MetadataError::TooLarge { .. })
    ));
}

fn db_key() -> KeyPair {
    let mut rng = rand_core::OsRng;
    KeyPair::self_signed(
        SigningKey::generate_p256(&mut rng),
        &CertRequest {
            common_name: "trustlaunch image test db".into(),
            not_before: 1_700_000_000,
            not_after: 253_402_300_799,
            role: CertRole::CodeSigning,
        },
        &mut rng,
    )
    .unwrap()
}

#[test]
fn tiny_image_is_a_signed_uki_on_the_esp_described_by_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let pair = db_key();
    let out = dir.path().join("tiny");
    let mut steps = Vec::new();
    let meta = build_image(
        &BuildRequest {
            name: "tiny-test".into(),
            recipe: Recipe::tiny("/usr/bin/true".into(), None).unwrap(),
            db_key: Some(&pair),
            out_dir: out.clone(),
            created_at: 1_795_366_337,
        },
        &mut |s| steps.push(s.to_owned()),
    )
    .unwrap();
    assert!(steps.len() >= 4, "{steps:?}");
    assert_eq!(ImageMetadata::read(&out).unwrap(), meta);
    assert_eq!(meta.key_template, KeyTemplate::Custom);
    let cert = meta.db_certificate.as_ref().unwrap();
    assert_eq!(cert.sha256, Sha256Digest::of(&pair.cert_der));
    assert_eq!(cert.subject, "CN=trustlaunch image test db");
    assert_eq!(meta.created_at, "2026-11-22T16:52:17Z");
    assert!(!out.join(".build").exists());

    let disk = out.join(DISK_FILE);
    let data = std::fs::read(&disk).unwrap();
    assert_eq!(meta.disk.sha256, Sha256Digest::of(&data));
    let uki = esp_file(&disk, "EFI/BOOT/BOOTX64.EFI");
    let db = Database::from_certs(
        trustlaunch_eventlog::Guid::from_bytes([0x11; 16]),
        [pair.cert_der.clone()],
    );
    let verdict = verify_image(&uki, &db, &Database::default()).unwrap();
    assert!(matches!(verdict, Verdict::Allowed { .. }), "{verdict:?}");

    let [c] = meta.boot_components.as_slice() else {
        panic!("{:?}", meta.boot_components)
    };
    let again = boot_component("EFI/BOOT/BOOTX64.EFI", &uki).unwrap();
    assert_eq!(*c, again);
    let h = trustlaunch_secureboot::authenticode::image_hash(
        &uki,
        trustlaunch_secureboot::authenticode::ImageHashAlg::Sha256,
    )
    .unwrap();
    assert_eq!(c.authenticode_sha256.0.as_slice(), h.as_bytes());
    assert_eq!(c.signers, ["CN=trustlaunch image test db"]);
    let names: Vec<&str> = c.uki_sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [".linux", ".osrel", ".cmdline", ".initrd"]);
    let cmdline = c
        .uki_sections
        .iter()
        .find(|s| s.name == ".cmdline")
        .unwrap();
    assert_eq!(
        cmdline.sha256,
        Sha256Digest::of(meta.kernel_cmdline.as_ref().unwrap().as_bytes())
    );
    assert!(c.uki_pcr11_sha256.is_some());

    // An image is never overwritten.
    let again = build_image(
        &BuildRequest {
            name: "again".into(),
            recipe: Recipe::Uki {
                uki: "/nonexistent".into(),
                sign: false,
            },
            db_key: None,
            out_dir: out.clone(),
            created_at: 0,
        },
        &mut |_| {},
    );
    assert!(matches!(again, Err(ImageError::Io { .. })));
}

#[test]
fn tiny_without_a_db_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = build_image(
        &BuildRequest {
            name: "t".into(),
            recipe: Recipe::tiny("/usr/bin/true".into(), None).unwrap(),
            db_key: None,
            out_dir: dir.path().join("t"),
            created_at: 0,
        },
        &mut |_| {},
    );
    assert!(
        matches!(&r, Err(ImageError::Missing(m)) if m.contains("--db-key")),
        "{r:?}"
    );
}

#[test]
fn debian_shim_image_has_debians_chain_and_grub_cfg_where_grub_looks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shim");
    let recipe = Recipe::debian_shim("/usr/bin/true".into(), None).unwrap();
    let Recipe::DebianShim {
        kernel,
        shim,
        grub,
        cmdline,
        ..
    } = recipe.clone()
    else {
        unreachable!()
    };
    let meta = build_image(
        &BuildRequest {
            name: "debian".into(),
            recipe,
            db_key: None,
            out_dir: out.clone(),
            created_at: 0,
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(meta.key_template, KeyTemplate::Microsoft);
    assert!(meta.db_certificate.is_none());
    let disk = out.join(DISK_FILE);
    for (esp, src) in [
        ("EFI/BOOT/BOOTX64.EFI", &shim),
        ("EFI/BOOT/grubx64.efi", &grub),
        ("vmlinuz", &kernel),
    ] {
        assert_eq!(esp_file(&disk, esp), std::fs::read(src).unwrap(), "{esp}");
    }
    let cfg = String::from_utf8(esp_file(&disk, "EFI/debian/grub.cfg")).unwrap();
    assert_eq!(cfg, debian_grub_cfg(&cmdline));
    assert!(cfg.contains("set timeout=0"));
    assert!(cfg.contains(&format!("linux /vmlinuz {cmdline}")));
    assert!(cfg.contains("initrd /initrd.img"));
    let initrd = esp_file(&disk, "initrd.img");
    assert!(parse_newc(&initrd)
        .unwrap()
        .iter()
        .any(|e| e.name == "init"));
    // shim, grub and the kernel are PE images signed by others.
    let paths: Vec<&str> = meta
        .boot_components
        .iter()
        .map(|c| c.esp_path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi", "vmlinuz"]
    );
    assert!(meta.boot_components.iter().all(|c| !c.signers.is_empty()));
    assert!(meta.boot_components[0].signers[0].contains("Microsoft"));
    assert_eq!(meta.esp_files.len(), 5);
}
