//! `image import` on disks made here from Debian's own signed binaries
//! (shim, grub, the host's kernel): the chain is found and verified
//! against the platform's key templates, a kernel whose signature was
//! removed and a shim whose hash is revoked are refused and named, BIOS
//! disks are recognised as Generation 1, and qcow2 files that name host
//! files are refused. Windows disks (an ESP laid out as Windows lays it
//! out, a real EFI boot manager signed here in the Windows Boot Manager's
//! place) are recognised, their boot manager judged by its signature
//! alone, never its signer's name; in the VM tier the runtime refuses a
//! Trusted Launch VM of the look-alike and boots the db-signed one from
//! the disk as brought. (The real Debian image is imported in the CLI's
//! VM tier, where it is built.)

use std::path::{Path, PathBuf};
use std::process::Command;

use trustlaunch_runtime::accel::{Accel, AccelDecision};
use trustlaunch_runtime::image_build::{
    build_image, certificate_info, sha256_file, BuildRequest, Recipe, DISK_FILE,
};
use trustlaunch_runtime::image_meta::{
    vm_key_template, Generation, ImageMetadata, KeyTemplate, NamedDigest, PredictedChain,
};
use trustlaunch_runtime::import::{import, inspect, ImportError, ImportRequest, TemplateDbs};
use trustlaunch_runtime::platform::Home;
use trustlaunch_runtime::spec::{Network, SecurityProfile, VmSpec};
use trustlaunch_runtime::vm::Runtime;
use trustlaunch_secureboot::chain::RefusalKind;
use trustlaunch_secureboot::keys::{CertRequest, CertRole, KeyPair, SigningKey};
use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::siglist::{SignatureData, SignatureDb, SignatureList, SignatureType};
use trustlaunch_secureboot::verify::EntryKind;

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

// Windows disks. No Windows binary exists on this host, so the Windows
// Boot Manager is played by a real EFI application of another boot
// manager — systemd-boot, from systemd-boot-efi, the package the host
// requirements install for the UKI stub: neither shim, grub nor a UKI —
// signed here. What makes it Windows to the import is the ESP's layout,
// as on a real Windows disk; what makes it bootable is only which db
// verifies its signature.

/// The stand-in for `bootmgfw.efi` (unsigned as shipped).
const BOOT_MANAGER: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Where Windows keeps its boot manager and boot configuration store.
const BOOTMGFW: &str = "EFI/Microsoft/Boot/bootmgfw.efi";
const BCD: &str = "EFI/Microsoft/Boot/BCD";

fn key_pair(issuer: Option<&KeyPair>, common_name: &str, role: CertRole) -> KeyPair {
    let mut rng = rand_core::OsRng;
    let request = CertRequest {
        common_name: common_name.into(),
        not_before: 1_700_000_000,
        not_after: 253_402_300_799,
        role,
    };
    let key = SigningKey::generate_p256(&mut rng);
    match issuer {
        Some(ca) => ca.issue(key, &request, &mut rng).unwrap(),
        None => KeyPair::self_signed(key, &request, &mut rng).unwrap(),
    }
}

/// A self-made CA that calls itself Microsoft's Windows PCA, and the
/// "Microsoft Windows" key it issued: names anyone can write.
fn look_alike_microsoft() -> (KeyPair, KeyPair) {
    let ca = key_pair(
        None,
        "Microsoft Windows Production PCA 2011",
        CertRole::Authority,
    );
    let leaf = key_pair(Some(&ca), "Microsoft Windows", CertRole::CodeSigning);
    (ca, leaf)
}

/// The stand-in boot manager signed by `signer`, its issuer carried in
/// the signature.
fn signed_boot_manager(signer: &KeyPair, issuer: Option<&KeyPair>) -> Vec<u8> {
    let extra: Vec<Vec<u8>> = issuer.map(|c| c.cert_der.clone()).into_iter().collect();
    trustlaunch_secureboot::sign::sign_image(
        &std::fs::read(BOOT_MANAGER).unwrap(),
        &signer.key,
        &signer.cert_der,
        &extra,
    )
    .unwrap()
}

/// A GPT disk whose FAT ESP is laid out as Windows lays it out:
/// `EFI/BOOT/BOOTX64.EFI`, `EFI/Microsoft/Boot/bootmgfw.efi` and, when
/// `bcd`, `EFI/Microsoft/Boot/BCD` (a registry hive's magic and nothing
/// more: the import does not parse it).
fn windows_disk(f: &Fixture, name: &str, bootx64: &[u8], bootmgfw: &[u8], bcd: bool) -> PathBuf {
    let mut hive = b"regf".to_vec();
    hive.resize(8192, 0);
    let mut files = vec![("EFI/BOOT/BOOTX64.EFI", bootx64), (BOOTMGFW, bootmgfw)];
    if bcd {
        files.push((BCD, &hive));
    }
    esp_disk(f, name, &files)
}

/// A GPT disk with a FAT ESP holding `(ESP path, contents)`.
fn esp_disk(f: &Fixture, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let src = f.root.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    let mut refs = Vec::new();
    for (i, (esp_path, data)) in files.iter().enumerate() {
        let path = src.join(i.to_string());
        std::fs::write(&path, data).unwrap();
        refs.push((*esp_path, path));
    }
    let refs: Vec<(&str, &Path)> = refs.iter().map(|(e, p)| (*e, p.as_path())).collect();
    let disk = f.root.join(format!("{name}.raw"));
    trustlaunch_runtime::image::build_disk(&refs, &src.join("scratch"), &disk).unwrap();
    disk
}

fn verdict<'a>(
    ins: &'a trustlaunch_runtime::import::Inspection,
    template: &str,
) -> &'a trustlaunch_runtime::import::TemplateVerdict {
    ins.templates
        .iter()
        .find(|t| t.template == template)
        .unwrap()
}

fn has_note(notes: &[String], text: &str) -> bool {
    notes.iter().any(|n| n.contains(text))
}

#[test]
fn a_boot_manager_signed_by_a_look_alike_of_microsofts_ca_is_refused_and_its_signer_named() {
    let f = fixture();
    // The microsoft template's db holds the real certificate of that
    // name: the look-alike differs from it by its key only.
    let ms_db = &f
        .templates
        .iter()
        .find(|t| t.template == KeyTemplate::Microsoft)
        .unwrap()
        .db;
    assert!(
        (0..ms_db.records().len()).any(|i| ms_db
            .entry(i)
            .and_then(|e| e.subject)
            .is_some_and(|s| s.contains("CN=Microsoft Windows Production PCA 2011"))),
        "the microsoft template's db lacks Microsoft's Windows PCA"
    );
    let (ca, leaf) = look_alike_microsoft();
    let bootmgr = signed_boot_manager(&leaf, Some(&ca));
    let disk = windows_disk(&f, "win-lookalike", &bootmgr, &bootmgr, true);
    let (meta, ins) = run_import(&f, &disk, "win-lookalike");

    assert_eq!(ins.os.as_deref(), Some("Windows"));
    let roles: Vec<&str> = ins.chain.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["Windows Boot Manager"]);
    assert_eq!(ins.chain[0].location, "ESP:EFI/BOOT/BOOTX64.EFI");
    assert_eq!(ins.chain[0].signers, ["CN=Microsoft Windows"]);
    // Refused by the microsoft template for the signature, naming the
    // signer, its issuer and the look-alike.
    let ms = verdict(&ins, "microsoft");
    assert!(!ms.boots);
    assert_eq!(ms.incomplete, None);
    let r = ms.refused.as_ref().unwrap();
    assert_eq!(
        (r.component.as_str(), r.checker.as_str(), r.reason),
        (
            "ESP:EFI/BOOT/BOOTX64.EFI",
            "the firmware",
            RefusalKind::SignerNotInDb
        )
    );
    assert!(
        r.detail.contains(
            "signed by CN=Microsoft Windows (issued by CN=Microsoft Windows Production PCA 2011)"
        ),
        "{}",
        r.detail
    );
    assert!(
        r.detail
            .contains("\"Microsoft Windows Production PCA 2011\" (db entry #")
            && r.detail.contains("never by its name"),
        "{}",
        r.detail
    );
    // The platform's own db refuses it too, without a look-alike.
    let custom = verdict(&ins, "custom");
    let rc = custom.refused.as_ref().unwrap();
    assert_eq!(rc.reason, RefusalKind::SignerNotInDb);
    assert!(!rc.detail.contains("never by its name"), "{}", rc.detail);
    assert!(!ins.trusted_launch_supported());
    assert!(meta.features.is_empty(), "{:?}", meta.features);
    assert!(
        meta.trusted_launch_refusals.iter().any(|l| l.starts_with(
            "microsoft: ESP:EFI/BOOT/BOOTX64.EFI would be refused by the firmware (signer not in db)"
        ) && l.contains("CN=Microsoft Windows")),
        "{:?}",
        meta.trusted_launch_refusals
    );
    // The chain is not called incomplete: Windows verifies the rest.
    assert!(ins.templates.iter().all(|t| t.incomplete.is_none()));
    assert!(
        has_note(
            &ins.notes,
            "is a byte-identical copy of EFI/Microsoft/Boot/bootmgfw.efi"
        ),
        "{:?}",
        ins.notes
    );
    assert!(
        has_note(&ins.notes, "Windows' own code integrity"),
        "{:?}",
        ins.notes
    );
    assert!(
        has_note(&ins.notes, "PCRs 12-14 (SIPA events)"),
        "{:?}",
        ins.notes
    );
    assert!(!has_note(&ins.notes, "BCD is missing"), "{:?}", ins.notes);
    // No Linux agent looked for; the Windows one is not detected.
    assert_eq!(ins.guest_agent.installed, Some(false));
    assert!(
        ins.guest_agent
            .evidence
            .contains("no Windows guest agent is detected"),
        "{}",
        ins.guest_agent.evidence
    );
    assert!(!ins.guest_agent.evidence.contains("root file system"));
    // PCR 4: the boot manager, from the removable-media path; nothing
    // else is claimed.
    let p = ins.predicted.as_ref().unwrap();
    assert_eq!(p.chain, PredictedChain::WindowsBootManager);
    assert_eq!(
        p.boot_applications,
        [NamedDigest {
            name: "\\EFI\\BOOT\\BOOTX64.EFI".into(),
            sha256: ins.chain[0].authenticode_sha256.clone().unwrap(),
        }]
    );
    assert!(p.authorities.is_empty() && p.loaded_files.is_empty());
    assert!(p.kernel_command_lines.is_empty());
    assert_eq!(meta.predicted_boot.as_ref(), Some(p));
}

#[test]
fn a_boot_manager_signed_by_a_db_key_boots_under_that_template() {
    let f = fixture();
    let rt = Runtime::open(Home::open(f.root.join("home")).unwrap()).unwrap();
    let db = &rt.keys().db;
    let bootmgr = signed_boot_manager(db, None);
    let disk = windows_disk(&f, "win-db", &bootmgr, &bootmgr, true);
    let (meta, ins) = run_import(&f, &disk, "win-db");

    assert_eq!(ins.chain[0].role, "Windows Boot Manager");
    let custom = verdict(&ins, "custom");
    assert!(custom.boots, "{custom:#?}");
    assert_eq!(custom.allowed.len(), 1);
    let db_subject = certificate_info(&db.cert_der).subject;
    assert!(
        custom.allowed[0].starts_with("ESP:EFI/BOOT/BOOTX64.EFI allowed by db entry #0")
            && custom.allowed[0].contains(&db_subject),
        "{:?}",
        custom.allowed
    );
    assert!(!verdict(&ins, "microsoft").boots);
    assert!(ins.trusted_launch_supported());
    assert!(meta
        .features
        .contains(&trustlaunch_runtime::image_meta::trusted_launch_feature()));
    assert_eq!(meta.key_template, KeyTemplate::Custom);
    assert_eq!(meta.db_certificate, Some(certificate_info(&db.cert_der)));
    assert!(meta.trusted_launch_refusals.is_empty());
    assert!(
        has_note(
            &meta.notes,
            "verified by Windows' own code integrity, not by UEFI's db"
        ),
        "{:?}",
        meta.notes
    );
    assert_eq!(
        ImageMetadata::read(&f.root.join("win-db-imported")).unwrap(),
        meta
    );
}

#[test]
fn a_windows_esp_without_bcd_or_with_another_bootx64_is_noted() {
    let f = fixture();
    let rt = Runtime::open(Home::open(f.root.join("home")).unwrap()).unwrap();
    let bootx64 = signed_boot_manager(&rt.keys().db, None);
    let bootmgfw = std::fs::read(BOOT_MANAGER).unwrap();
    let disk = windows_disk(&f, "win-nobcd", &bootx64, &bootmgfw, false);
    let ins = inspect(&disk, &f.templates).unwrap();
    assert_eq!(ins.chain[0].role, "Windows Boot Manager");
    assert!(
        has_note(
            &ins.notes,
            "EFI/Microsoft/Boot/BCD is missing: the boot manager reads its boot configuration there and, without it, would stop"
        ),
        "{:?}",
        ins.notes
    );
    let unsigned = PeImage::parse(&bootmgfw).unwrap();
    let digest = trustlaunch_secureboot::authenticode::image_sha256_parsed(&bootmgfw, &unsigned)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert!(
        has_note(
            &ins.notes,
            &format!("differs from EFI/Microsoft/Boot/bootmgfw.efi (Authenticode {digest})")
        ),
        "{:?}",
        ins.notes
    );
    assert!(!has_note(&ins.notes, "byte-identical"));
    // The boot manager the firmware starts is what is judged.
    assert!(verdict(&ins, "custom").boots);

    // FAT names match without regard to case, as the firmware and the
    // boot manager read them.
    let disk = esp_disk(
        &f,
        "win-upper",
        &[
            ("EFI/BOOT/BOOTX64.EFI", &bootx64),
            ("EFI/MICROSOFT/BOOT/BOOTMGFW.EFI", &bootx64),
            ("EFI/MICROSOFT/BOOT/BCD", b"regf"),
        ],
    );
    let ins = inspect(&disk, &f.templates).unwrap();
    assert_eq!(ins.chain[0].role, "Windows Boot Manager");
    assert!(has_note(&ins.notes, "byte-identical"), "{:?}", ins.notes);
    assert!(!has_note(&ins.notes, "BCD is missing"), "{:?}", ins.notes);
    // Without bootmgfw.efi the same binary is just an EFI application
    // whose next stage is unknown.
    let disk = esp_disk(&f, "not-win", &[("EFI/BOOT/BOOTX64.EFI", &bootx64)]);
    let ins = inspect(&disk, &f.templates).unwrap();
    assert_eq!(ins.chain[0].role, "EFI application");
    assert_eq!(ins.os, None);
    assert!(verdict(&ins, "custom")
        .incomplete
        .as_deref()
        .is_some_and(|w| w.contains("neither shim, grub nor a UKI")));
}

#[test]
fn a_boot_manager_of_random_bytes_is_refused_never_a_panic() {
    use rand_core::RngCore;
    let f = fixture();
    let mut noise = vec![0u8; 64 << 10];
    rand_core::OsRng.fill_bytes(&mut noise);
    let mut mz = noise.clone();
    mz[..2].copy_from_slice(b"MZ");
    // e_lfanew pointing at the end of the file.
    mz[0x3c..0x40].copy_from_slice(&((64u32 << 10) - 2).to_le_bytes());
    let real = std::fs::read(BOOT_MANAGER).unwrap();
    let truncated = real[..4096].to_vec();
    for (name, junk) in [("noise", &noise), ("mz", &mz), ("truncated", &truncated)] {
        // The junk as both files, the firmware's and Windows' own.
        let disk = windows_disk(&f, &format!("win-{name}"), junk, junk, true);
        let ins = inspect(&disk, &f.templates).unwrap();
        assert_eq!(ins.chain[0].role, "Windows Boot Manager", "{name}");
        assert_eq!(ins.chain[0].authenticode_sha256, None, "{name}");
        for t in &ins.templates {
            let r = t
                .refused
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: {t:#?}"));
            assert_eq!(r.reason, RefusalKind::Malformed, "{name}: {r:#?}");
        }
        assert!(!ins.trusted_launch_supported());
        assert_eq!(ins.predicted, None, "{name}");
    }
    // Junk at Windows' path only, a signed boot manager at the firmware's:
    // said, and the import still writes an image.
    let rt = Runtime::open(Home::open(f.root.join("home")).unwrap()).unwrap();
    let bootx64 = signed_boot_manager(&rt.keys().db, None);
    let disk = windows_disk(&f, "win-junkmgr", &bootx64, &noise, true);
    let (meta, ins) = run_import(&f, &disk, "win-junkmgr");
    assert!(
        has_note(
            &ins.notes,
            "differs from EFI/Microsoft/Boot/bootmgfw.efi (not a PE image)"
        ),
        "{:?}",
        ins.notes
    );
    assert!(meta
        .esp_files
        .iter()
        .any(|e| e.esp_path.eq_ignore_ascii_case(BOOTMGFW)));
}

#[test]
fn a_windows_chain_the_microsoft_template_allows_gets_it_and_the_disk_is_not_touched() {
    let f = fixture();
    // Nothing here is signed by Microsoft's key, so the microsoft
    // template's db gains the look-alike CA as a stand-in for its Windows
    // PCA: the choice of template sees a Windows chain its db authorises.
    let (ca, leaf) = look_alike_microsoft();
    let mut templates = f.templates.clone();
    let ms = templates
        .iter_mut()
        .find(|t| t.template == KeyTemplate::Microsoft)
        .unwrap();
    let owner = ms.db.records()[0].owner;
    ms.db.push(EntryKind::X509, owner, ca.cert_der.clone());
    let bootmgr = signed_boot_manager(&leaf, Some(&ca));
    let disk = windows_disk(&f, "win-ms", &bootmgr, &bootmgr, true);
    let (source_digest, _) = sha256_file(&disk).unwrap();
    let out = f.root.join("win-ms-imported");
    let (meta, ins) = import(
        &ImportRequest {
            disk: &disk,
            out_dir: &out,
            name: "win-ms",
            templates: &templates,
            created_at: 0,
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(verdict(&ins, "microsoft").boots, "{:#?}", ins.templates);
    assert!(!verdict(&ins, "custom").boots);
    assert_eq!(meta.key_template, KeyTemplate::Microsoft);
    assert_eq!(meta.db_certificate, None);
    assert!(meta
        .features
        .contains(&trustlaunch_runtime::image_meta::trusted_launch_feature()));
    // The image is the user's disk, byte for byte.
    assert_eq!(meta.disk.sha256, source_digest);
    assert_eq!(
        vm_key_template(&out),
        trustlaunch_runtime::spec::KeyTemplate::Microsoft
    );
    // A Trusted Launch VM of it under the microsoft template: made without
    // a warning, and the image is still the user's disk.
    let rt = tcg_runtime(&f);
    let spec = trusted_launch_spec("win", &out);
    let mut steps = Vec::new();
    rt.create(&spec, &mut |p| steps.push((p.step, p.detail)))
        .unwrap();
    assert!(steps.iter().all(|(s, _)| *s != "warning"), "{steps:?}");
    assert!(
        steps
            .iter()
            .any(|(s, d)| *s == "varstore" && d.starts_with("microsoft template, Secure Boot on")),
        "{steps:?}"
    );
    assert_eq!(sha256_file(&out.join(DISK_FILE)).unwrap().0, source_digest);
    rt.delete("win").unwrap();
}

/// A runtime on the fixture's home that runs guests under TCG.
fn tcg_runtime(f: &Fixture) -> Runtime {
    Runtime::open_with_accel(
        Home::open(f.root.join("home")).unwrap(),
        AccelDecision {
            accel: Accel::Tcg,
            reason: "test".into(),
        },
    )
    .unwrap()
}

/// A small Trusted Launch VM of an imported image, under the key template
/// its import chose.
fn trusted_launch_spec(name: &str, image: &Path) -> VmSpec {
    VmSpec {
        name: name.into(),
        hyper_v_generation: trustlaunch_runtime::spec::Generation::V2,
        security_profile: SecurityProfile::trusted_launch(),
        key_template: vm_key_template(image),
        vcpus: 1,
        memory_mib: 512,
        image: image.to_owned(),
        data_disks: Vec::new(),
        network: Network::None,
        os_profile: None,
    }
}

/// The runtime boots a Windows disk as its import judged it, and nothing
/// else: a boot manager signed through a look-alike of Microsoft's CA
/// gets no Trusted Launch VM at all, and one a template's db verifies is
/// started by the firmware under Secure Boot from the disk as the user
/// brought it (the stand-in boot manager then waits at its menu: no
/// trustlaunch agent is on a Windows disk).
#[test]
#[ignore = "VM tier: one QEMU boot under TCG (~60 s); ./scripts/test.sh runs it"]
fn a_windows_disk_boots_unchanged_under_the_template_its_import_chose() {
    let f = fixture();
    let rt = tcg_runtime(&f);
    // A look-alike's signature: no template boots it, so no Trusted
    // Launch VM is made of it.
    let (ca, leaf) = look_alike_microsoft();
    let fake = signed_boot_manager(&leaf, Some(&ca));
    let disk = windows_disk(&f, "win-fake", &fake, &fake, true);
    let (meta, _) = run_import(&f, &disk, "win-fake");
    assert!(!meta
        .features
        .contains(&trustlaunch_runtime::image_meta::trusted_launch_feature()));
    let err = rt
        .create(
            &trusted_launch_spec("fake", &f.root.join("win-fake-imported")),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(err.to_string().contains("TrustedLaunchSupported"), "{err}");

    // Signed by the platform's db key: the import chose `custom`, and the
    // firmware starts the boot manager under Secure Boot.
    let bootmgr = signed_boot_manager(&rt.keys().db, None);
    let disk = windows_disk(&f, "win-db", &bootmgr, &bootmgr, true);
    let (meta, _) = run_import(&f, &disk, "win-db");
    assert_eq!(meta.key_template, KeyTemplate::Custom);
    let image = f.root.join("win-db-imported");
    let (image_digest, _) = sha256_file(&image.join(DISK_FILE)).unwrap();
    assert_eq!(image_digest, sha256_file(&disk).unwrap().0);
    rt.create(&trusted_launch_spec("win", &image), &mut |_| {})
        .unwrap();
    let mut steps: Vec<(&'static str, String)> = Vec::new();
    rt.start("win", &mut |p| steps.push((p.step, p.detail)))
        .unwrap();
    let outcome = rt.wait_boot("win", std::time::Duration::from_secs(45), &mut |p| {
        steps.push((p.step, p.detail))
    });
    let console = std::fs::read_to_string(rt.home().vms().join("win").join("console.log"))
        .unwrap_or_default();
    assert!(
        steps.iter().any(|(s, _)| *s == "firmware"),
        "the firmware started the boot manager: {steps:?}\n{console}"
    );
    assert!(
        steps.iter().all(|(s, _)| *s != "denied"),
        "{steps:?}\n{console}"
    );
    assert!(
        !console.contains("Access Denied"),
        "Secure Boot let it run: {console}"
    );
    // No agent answers on a Windows disk: the boot is not a failure, it is
    // not attested.
    assert!(
        !matches!(
            outcome,
            Ok(trustlaunch_runtime::vm::BootOutcome::Failed { .. })
                | Ok(trustlaunch_runtime::vm::BootOutcome::Attested { .. })
        ),
        "{outcome:?}"
    );
    rt.stop("win", std::time::Duration::from_secs(1)).ok();
    rt.delete("win").unwrap();
    // The image is still the user's disk.
    assert_eq!(sha256_file(&image.join(DISK_FILE)).unwrap().0, image_digest);
}
