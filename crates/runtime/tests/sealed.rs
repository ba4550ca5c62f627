//! Private keys at rest: after a VM is made, no file under the home holds
//! a private key in the clear (no PEM private key, no raw vTPM key), every
//! file is 0600 and every directory 0700; a home opened with another
//! master key fails naming the file; a home an older version left with
//! keys in the clear is sealed in place on open, and its keys (and its
//! VM's vTPM) still work.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand_core::OsRng;
use trustlaunch_runtime::accel::{Accel, AccelDecision};
use trustlaunch_runtime::image_build::{build_image, BuildRequest, Recipe};
use trustlaunch_runtime::platform::{Home, MasterKey, SealedFile};
use trustlaunch_runtime::process::Marker;
use trustlaunch_runtime::spec::{Generation, KeyTemplate, Network, SecurityProfile, VmSpec};
use trustlaunch_runtime::vm::Runtime;
use trustlaunch_runtime::vtpm::VtpmPaths;
use trustlaunch_tpm_client::KeyAlg;

fn runtime(home: &Path) -> Result<Runtime, trustlaunch_runtime::vm::VmError> {
    Runtime::open_with_accel(
        Home::open(home).unwrap(),
        AccelDecision {
            accel: Accel::Tcg,
            reason: "test".into(),
        },
    )
}

fn image(dir: &Path) -> PathBuf {
    let out = dir.join("img");
    build_image(
        &BuildRequest {
            name: "shim-only".into(),
            recipe: Recipe::Chain {
                efi: "/usr/lib/shim/shimx64.efi.signed".into(),
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

fn vm(name: &str, image: &Path) -> VmSpec {
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

/// Every file under `dir` (not following symlinks), with directories.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, out);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The sealed key files of a home with one VM, by purpose.
fn key_files(home: &Path, vm: &str) -> Vec<SealedFile> {
    let sb = home.join("platform/secureboot");
    let mut v: Vec<SealedFile> = ["pk", "kek", "db"]
        .iter()
        .map(|n| {
            SealedFile::new(
                sb.join(format!("{n}.key")),
                format!("platform/secureboot/{n}"),
            )
        })
        .collect();
    v.push(SealedFile::new(
        home.join("platform/vtpm-ca/ca.key"),
        "platform/vtpm-ca",
    ));
    v.push(SealedFile::new(
        home.join(format!("keys/{vm}.vtpm.key")),
        format!("vtpm/{vm}"),
    ));
    v
}

#[test]
fn no_private_key_in_the_clear_and_private_modes() {
    // As the binaries run: umask 077 (swtpm's lock file takes it).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let home = tmp.path().join("home");
    let rt = runtime(&home).unwrap();
    rt.create(&vm("vm-s", &img), &mut |_| {}).unwrap();
    let master = rt.home().master_key().unwrap();

    // Each key file is sealed armor that opens to the key; no file under
    // the home holds a key's secret bytes.
    let mut secrets = Vec::new();
    for f in key_files(&home, "vm-s") {
        let text = fs::read_to_string(&f.path).unwrap();
        assert!(trustlaunch_seal::is_sealed(&text), "{}", f.path.display());
        let opened = master.open(&f.purpose, &text).unwrap();
        secrets.push((f.path.clone(), opened.to_vec()));
    }
    let vtpm_key = &secrets.last().unwrap().1;
    assert_eq!(vtpm_key.len(), 32);
    let mut files = Vec::new();
    walk(&home, &mut files);
    let ids = trustlaunch_runtime::confine::read_ids(&home.join("vms/vm-s/ids.json")).unwrap();
    for path in &files {
        let meta = fs::symlink_metadata(path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        // Owned by root, or (the vTPM state) by the VM's swtpm.
        let owners: Vec<u32> = std::iter::once(rustix::process::geteuid().as_raw())
            .chain(ids.map(|i| i.swtpm))
            .collect();
        assert!(
            owners.contains(&meta.uid()),
            "{} uid {}",
            path.display(),
            meta.uid()
        );
        if !meta.is_file() {
            continue;
        }
        let bytes = fs::read(path).unwrap();
        assert!(
            !contains(&bytes, b"PRIVATE KEY"),
            "{} holds a private key in the clear",
            path.display()
        );
        if path.file_name().is_some_and(|n| n == "master.key") {
            continue;
        }
        for (key_path, secret) in &secrets {
            // A PEM key's body, or the raw vTPM key.
            let probe = if secret.len() == 32 {
                &secret[..]
            } else {
                &secret[40..104]
            };
            assert!(
                !contains(&bytes, probe),
                "{} holds the secret of {}",
                path.display(),
                key_path.display()
            );
        }
    }

    // Another master key: refused, naming the file that does not open.
    drop(rt);
    fs::write(home.join("master.key"), [9u8; 32]).unwrap();
    let e = runtime(&home)
        .err()
        .expect("opened with another master key");
    let e = e.to_string();
    assert!(
        e.contains("platform/secureboot/pk.key")
            && e.contains("does not open with this master key"),
        "{e}"
    );
}

#[test]
fn a_home_with_keys_in_the_clear_is_sealed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let home = tmp.path().join("home");
    let rt = runtime(&home).unwrap();
    let info = rt.create(&vm("vm-old", &img), &mut |_| {}).unwrap();
    let ek = info.state.ek_certificate.clone().unwrap();
    let db_cert = rt.keys().db.cert_der.clone();
    let master = rt.home().master_key().unwrap();
    drop(rt);

    // What an older version left: PEM keys and the raw vTPM key in the
    // clear (0600).
    let files = key_files(&home, "vm-old");
    let mut clear = Vec::new();
    for f in &files {
        let secret = f.read(&master, |_| false).unwrap();
        fs::write(&f.path, &secret[..]).unwrap();
        clear.push(secret.to_vec());
    }
    assert!(fs::read_to_string(&files[0].path)
        .unwrap()
        .contains("PRIVATE KEY"));

    // Opening the home seals the platform's keys in place; the VM's key
    // is sealed the first time the runtime reads it.
    let rt = runtime(&home).unwrap();
    assert_eq!(rt.keys().db.cert_der, db_cert, "the same db key");
    let vtpm = VtpmPaths {
        state: home.join("vms/vm-old/vtpm"),
        key: files[4].clone(),
    };
    let key = vtpm.load_key(&master).unwrap();
    assert_eq!(&key[..], &clear[4][..]);
    for (f, secret) in files.iter().zip(&clear) {
        let text = fs::read_to_string(&f.path).unwrap();
        assert!(trustlaunch_seal::is_sealed(&text), "{}", f.path.display());
        assert_eq!(&master.open(&f.purpose, &text).unwrap()[..], &secret[..]);
        assert_eq!(
            fs::metadata(&f.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The migrated key still opens the VM's vTPM: same EK certificate.
    let marker = Marker {
        dir: home.join("vms/vm-old").display().to_string(),
        uid: None,
    };
    let swtpm = vtpm.serve_private(&master, &marker, None).unwrap();
    let mut tpm = swtpm.client().unwrap();
    tpm.startup_clear().unwrap();
    let cert = tpm.read_ek_certificate(KeyAlg::Rsa2048).unwrap().unwrap();
    assert_eq!(trustlaunch_eventlog::hex::encode(&cert), ek);
    swtpm.shutdown().unwrap();

    // Neither sealed armor nor a key in the clear: refused, not "migrated".
    let garbage = SealedFile::new(tmp.path().join("garbage.key"), "vtpm/x");
    fs::write(&garbage.path, b"not a key").unwrap();
    let e = garbage
        .read(&MasterKey::generate(&mut OsRng), |b| b.len() == 32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("garbage.key"), "{e}");
    assert_eq!(fs::read(&garbage.path).unwrap(), b"not a key");
}
