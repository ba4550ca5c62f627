//! `image import` on disks made here from Debian's own signed binaries
//! (shim, grub, the host's kernel): the chain is found and verified
//! against the platform's key templates, a kernel whose signature was
//! removed and a shim whose hash is revoked are refused and named, BIOS
//! disks are recognised as Generation 1, and qcow2 files that name host
//! files are refused. (The real Debian image is imported in the CLI's
//! VM tier, where it is built.)

use std::path::{Path, PathBuf};
use std::process::Command;

use trustlaunch_runtime::image_build::{build_image, BuildRequest, Recipe, DISK_FILE};
use trustlaunch_runtime::image_meta::{Generation, ImageMetadata, KeyTemplate};
use trustlaunch_runtime::import::{import, inspect, ImportError, ImportRequest, TemplateDbs};
use trustlaunch_runtime::platform::Home;
use trustlaunch_runtime::vm::Runtime;
use trustlaunch_secureboot::chain::RefusalKind;
use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::siglist::{SignatureData, SignatureDb, SignatureList, SignatureType};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    templates: Vec<TemplateDbs>,
    /// Debian's shim, grub, kernel and our initramfs, as the debian-shim
    /// recipe lays them out.
    shim: PathBuf,
    grub: PathBuf,
    kernel: PathBuf,
    cmdline: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let rt = Runtime::open(Home::open(root.join("home")).unwrap()).unwrap();
    let templates = rt.template_databases(None).unwrap();
    let Recipe::DebianShim {
        kernel,
        shim,
        grub,
        cmdline,
        ..
    } = Recipe::debian_shim("/usr/bin/true".into(), None).unwrap()
    else {
        unreachable!()
    };
    Fixture {
        _dir: dir,
        root,
        templates,
        shim,
        grub,
        kernel,
        cmdline,
    }
}

fn run_import(
    f: &Fixture,
    disk: &Path,
    name: &str,
) -> (ImageMetadata, trustlaunch_runtime::import::Inspection) {
    import(
        &ImportRequest {
            disk,
            out_dir: &f.root.join(format!("{name}-imported")),
            name,
            templates: &f.templates,
            created_at: 0,
        },
        &mut |_| {},
    )
    .unwrap()
}

/// A chain image from (ESP path, bytes) files, shim as the boot
/// application.
fn chain_disk(f: &Fixture, name: &str, kernel: &[u8]) -> PathBuf {
    let src = f.root.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    let k = src.join("vmlinuz");
    std::fs::write(&k, kernel).unwrap();
    let cfg = src.join("grub.cfg");
    std::fs::write(
        &cfg,
        trustlaunch_runtime::image_build::debian_grub_cfg(&f.cmdline),
    )
    .unwrap();
    let initrd = src.join("initrd.img");
    // An uncompressed newc archive without the agent.
    std::fs::write(&initrd, b"070701 no agent here").unwrap();
    let out = f.root.join(name);
    build_image(
        &BuildRequest {
            name: name.into(),
            recipe: Recipe::Chain {
                efi: f.shim.clone(),
                files: vec![
                    ("EFI/BOOT/grubx64.efi".into(), f.grub.clone()),
                    ("EFI/debian/grub.cfg".into(), cfg),
                    ("vmlinuz".into(), k),
                    ("initrd.img".into(), initrd),
                ],
            },
            db_key: None,
            out_dir: out.clone(),
            created_at: 0,
        },
        &mut |_| {},
    )
    .unwrap();
    out.join(DISK_FILE)
}

/// `data` with its Authenticode signatures removed (the certificate
/// table's directory entry zeroed, the table cut off).
fn strip_signatures(data: &[u8]) -> Vec<u8> {
    let pe = PeImage::parse(data).unwrap();
    let mut out = data.to_vec();
    let (at, _) = pe.cert_table;
    let dir = pe.cert_dir_offset.unwrap();
    out[dir..dir + 8].fill(0);
    out.truncate(at as usize);
    out
}

#[test]
fn debians_chain_is_verified_under_microsoft_and_refused_under_custom() {
    let f = fixture();
    let disk = chain_disk(&f, "signed", &std::fs::read(&f.kernel).unwrap());
    let (meta, ins) = run_import(&f, &disk, "signed");
    assert_eq!(meta.generation, Generation::V2);
    assert!(ins.trusted_launch_supported(), "{:#?}", ins.templates);
    assert_eq!(meta.key_template, KeyTemplate::Microsoft);
    assert!(meta
        .features
        .contains(&trustlaunch_runtime::image_meta::trusted_launch_feature()));
    let roles: Vec<&str> = ins.chain.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["shim", "boot loader", "kernel"]);
    assert_eq!(ins.chain[2].location, "ESP:/vmlinuz");
    assert!(ins.chain[2].signers[0].contains("Debian Secure Boot Signer"));
    let ms = ins
        .templates
        .iter()
        .find(|t| t.template == "microsoft")
        .unwrap();
    assert_eq!(ms.allowed.len(), 3, "{ms:#?}");
    assert!(ms.allowed[0].contains("Microsoft Corporation UEFI CA 2011"));
    assert!(ms.allowed[2].contains("shim's vendor certificate (CN=Debian Secure Boot CA)"));
    // The platform's own db does not hold Microsoft's CA.
    let custom = ins
        .templates
        .iter()
        .find(|t| t.template == "custom")
        .unwrap();
    let r = custom.refused.as_ref().unwrap();
    assert_eq!(
        (r.component.as_str(), r.reason),
        ("ESP:EFI/BOOT/BOOTX64.EFI", RefusalKind::SignerNotInDb)
    );
    // The release comes from the kernel's own header.
    let release = f
        .kernel
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .strip_prefix("vmlinuz-")
        .unwrap()
        .to_owned();
    assert_eq!(ins.kernel_release.as_deref(), Some(release.as_str()));
    // No agent in that initramfs: said, not guessed.
    assert_eq!(ins.guest_agent.installed, Some(false));
    assert_eq!(meta.guest_agent, Some(false));
    // Debian's grub behind shim: PCR 4, 7 and 9 predicted.
    let p = ins.predicted.as_ref().unwrap();
    assert_eq!(p.boot_applications.len(), 4);
    assert_eq!(
        p.boot_applications[0].sha256,
        ins.chain[0].authenticode_sha256.clone().unwrap()
    );
    assert_eq!(p.boot_applications[2].sha256, p.boot_applications[3].sha256);
    let files: Vec<&str> = p.loaded_files.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        files,
        ["(hd0,gpt1)/EFI/debian/grub.cfg", "/vmlinuz", "/initrd.img"]
    );
    assert_eq!(p.kernel_command_lines, [format!("/vmlinuz {}", f.cmdline)]);
    let auth: Vec<&str> = p.authorities.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(auth, ["db", "MokListRT"]);
    // image.json reads back, and the report is next to it.
    let dir = f.root.join("signed-imported");
    assert_eq!(ImageMetadata::read(&dir).unwrap(), meta);
    assert!(dir.join("import.json").is_file());
}

#[test]
fn an_unsigned_kernel_is_refused_by_shim_and_named() {
    let f = fixture();
    let unsigned = strip_signatures(&std::fs::read(&f.kernel).unwrap());
    let disk = chain_disk(&f, "unsigned", &unsigned);
    let (meta, ins) = run_import(&f, &disk, "unsigned");
    assert!(!ins.trusted_launch_supported());
    assert!(meta.features.is_empty(), "{:?}", meta.features);
    let ms = ins
        .templates
        .iter()
        .find(|t| t.template == "microsoft")
        .unwrap();
    let r = ms.refused.as_ref().unwrap();
    assert_eq!(r.component, "ESP:/vmlinuz");
    assert_eq!(r.checker, "shim");
    assert_eq!(r.reason, RefusalKind::Unsigned);
    // shim and grub were allowed before it.
    assert_eq!(ms.allowed.len(), 2);
    let said = ins.refusals().join("\n");
    assert!(
        said.contains("microsoft: ESP:/vmlinuz would be refused by shim (unsigned)"),
        "{said}"
    );
    assert!(meta
        .trusted_launch_refusals
        .iter()
        .any(|n| n.contains("ESP:/vmlinuz would be refused by shim")));
    // A VM cannot get Trusted Launch from it.
    assert!(ins.predicted.is_none() || !ins.trusted_launch_supported());
}

#[test]
fn a_shim_revoked_by_a_dbx_update_is_refused_and_named() {
    let f = fixture();
    let disk = chain_disk(&f, "revoked", &std::fs::read(&f.kernel).unwrap());
    // dbx gains shim's Authenticode SHA-256.
    let shim = std::fs::read(&f.shim).unwrap();
    let pe = PeImage::parse(&shim).unwrap();
    let hash = trustlaunch_secureboot::authenticode::image_sha256_parsed(&shim, &pe).unwrap();
    let mut list = SignatureList::hashes(SignatureType::Sha256).unwrap();
    list.push(SignatureData {
        owner: trustlaunch_secureboot::chain::SHIM_LOCK_GUID,
        data: hash.to_vec(),
    })
    .unwrap();
    let update = SignatureDb { lists: vec![list] };
    let home = Home::open(f.root.join("home")).unwrap();
    let templates = Runtime::open(home)
        .unwrap()
        .template_databases(Some(&update))
        .unwrap();
    let raw = f.root.join("revoked-copy.raw");
    std::fs::copy(&disk, &raw).unwrap();
    let ins = inspect(&raw, &templates).unwrap();
    assert!(!ins.trusted_launch_supported());
    let ms = ins
        .templates
        .iter()
        .find(|t| t.template == "microsoft")
        .unwrap();
    let r = ms.refused.as_ref().unwrap();
    assert_eq!(r.component, "ESP:EFI/BOOT/BOOTX64.EFI");
    assert_eq!(r.checker, "the firmware");
    assert_eq!(r.reason, RefusalKind::HashInDbx);
    assert!(r.detail.contains("revoked by dbx"), "{}", r.detail);
}

fn sfdisk(disk: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (fdisk)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn bios_disks_are_generation_1() {
    let f = fixture();
    for (name, script, why) in [
        ("mbr", "label: dos\nstart=2048, type=83\n", "an MBR partition table"),
        (
            "gpt-no-esp",
            "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\nstart=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
            "a GPT without an EFI system partition",
        ),
    ] {
        let disk = f.root.join(format!("{name}.raw"));
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        sfdisk(&disk, script);
        let (meta, ins) = run_import(&f, &disk, name);
        assert_eq!(ins.generation, Generation::V1, "{name}");
        assert!(ins.generation_reason.starts_with(why), "{}", ins.generation_reason);
        assert_eq!(meta.generation, Generation::V1);
        assert!(meta.features.is_empty());
        assert!(ins.templates.iter().all(|t| !t.boots));
    }
}

#[test]
fn hostile_disks_are_refused_with_a_reason() {
    let f = fixture();
    // Not a disk at all.
    let junk = f.root.join("junk.raw");
    std::fs::write(&junk, vec![0xa5u8; 4096]).unwrap();
    let err = import(
        &ImportRequest {
            disk: &junk,
            out_dir: &f.root.join("junk-out"),
            name: "junk",
            templates: &f.templates,
            created_at: 0,
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("no partition table"), "{err}");
    // A qcow2 naming a host file as its backing file.
    let q = f.root.join("evil.qcow2");
    let st = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            "/etc/shadow",
        ])
        .arg(&q)
        .arg("1M")
        .status()
        .unwrap();
    assert!(st.success());
    let err = import(
        &ImportRequest {
            disk: &q,
            out_dir: &f.root.join("evil-out"),
            name: "evil",
            templates: &f.templates,
            created_at: 0,
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(&err, ImportError::Refused { reason, .. } if reason.contains("backing file")),
        "{err}"
    );
    // A GPT whose ESP is not FAT: a typed error naming the partition.
    let disk = f.root.join("badesp.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    sfdisk(
        &disk,
        "label: gpt\nstart=2048, size=4096, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n",
    );
    let err = inspect(&disk, &f.templates).unwrap_err();
    assert!(err.to_string().contains("partition 1 (FAT)"), "{err}");
}

#[test]
fn a_qcow2_disk_is_converted_and_inspected() {
    let f = fixture();
    let raw = chain_disk(&f, "q", &std::fs::read(&f.kernel).unwrap());
    let q = f.root.join("q.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .unwrap();
    assert!(st.success());
    let (meta, ins) = run_import(&f, &q, "qcow");
    assert!(ins.trusted_launch_supported());
    assert_eq!(meta.disk.format, "raw");
    assert!(meta.notes.iter().any(|n| n.contains("(qcow2)")));
}
